"""medgate.api"""
