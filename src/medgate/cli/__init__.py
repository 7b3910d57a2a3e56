"""medgate.cli"""
