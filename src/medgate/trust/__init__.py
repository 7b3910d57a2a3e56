"""medgate.trust"""
