"""medgate.reports."""
