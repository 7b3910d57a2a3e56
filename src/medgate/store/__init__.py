"""medgate.store"""
