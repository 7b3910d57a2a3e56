"""medgate.training."""
