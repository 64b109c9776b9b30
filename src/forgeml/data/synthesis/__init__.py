"""Training examples made from documents (`data.synthesize`, stage.py).

passages.py   documents cut into passages with offsets and hashes (the lineage unit)
rules.py      the offline generator: definitions, lists, headings, cloze
teacher.py    the teacher generator: a model behind an OpenAI-compatible endpoint
filters.py    grounded in the passage, not a duplicate, sized, free of PII
"""
