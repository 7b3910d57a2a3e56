"""medgate.delivery"""
