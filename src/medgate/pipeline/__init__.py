"""medgate.pipeline"""
