"""Commands that never run on the request path: the demo build, `rules build`, `report`."""
