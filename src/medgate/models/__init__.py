"""medgate.models."""
