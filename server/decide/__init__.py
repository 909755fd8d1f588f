"""How a decision is made: request context, the world of open snapshots, the decision service."""
