"""medgate.review"""
