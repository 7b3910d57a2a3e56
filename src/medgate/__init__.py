"""medgate: an AI diagnosis gateway between a regional PACS, imaging AI and primary-care doctors."""

__version__ = "0.1.0"
