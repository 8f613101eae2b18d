"""The chaos soak (``make chaos``): the three checks under injected faults, on DynamoDB Local.

``python -m tests.chaos --help`` for its options; README "Chaos soak" for what it proves.
"""
