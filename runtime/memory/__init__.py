"""An agent's long-term memory: store, embedder, hybrid recall, facts, graph, context budget.

Light to import: the embedder's model (wordllama, numpy) loads on first use.
"""
