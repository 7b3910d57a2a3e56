"""medgate.serving."""
