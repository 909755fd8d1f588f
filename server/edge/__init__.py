"""How `GET /v1/edge` is answered: the HTTP protocol, the hot GET routes, answers, memo keys."""
