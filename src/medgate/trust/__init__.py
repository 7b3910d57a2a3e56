"""Trust in what happens to patient data: the hash-chained audit trail, PS3.15 Annex E
de-identification and the de-identified export for training.
"""
