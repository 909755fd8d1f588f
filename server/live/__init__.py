"""Live activity: events, the node-local store, bandit statistics and webhook triggers."""
