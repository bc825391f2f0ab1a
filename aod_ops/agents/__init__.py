"""The agents of the AoD loop: chat models, the judge and the prompt optimizer.

``chat`` holds the ``ChatModel`` interface and its backends, ``judge`` turns candidates into
verdicts, a reward and feedback, ``optimizer`` proposes revised prompts, and ``prompt`` is the
versioned prompt value they exchange.
"""
