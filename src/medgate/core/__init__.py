"""medgate.core"""
