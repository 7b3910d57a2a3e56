"""medgate.dicom."""
