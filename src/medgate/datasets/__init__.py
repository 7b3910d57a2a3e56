"""medgate.datasets."""
