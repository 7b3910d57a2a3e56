"""The radiologist's side: the reading worklist, verdicts and the verified SR they produce,
critical-result notification with escalation, verdicts as training labels, and per-model
monitoring from verdicts.
"""
