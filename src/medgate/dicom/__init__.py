"""The DICOM network: the storage SCP (receiver on medgate's own acceptor), the retriever (C-FIND,
C-MOVE, C-GET), the sending SCU, TLS, header parsing, and Orthanc as a child process.
"""
