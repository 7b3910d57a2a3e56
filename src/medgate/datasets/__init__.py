"""Data for training, tests and demos: seeded phantom generators (chest radiographs, chest CT,
synthetic series) and labelled-folder readers.
"""
