"""What replicas share at run time: a lookup cache, short locks and counters.

The `Cache` port (base.py) has an in-process implementation (memory.py: one server, one
worker's view) and a Redis one (redis.py) that shares it between replicas and degrades to the
in-process one, slower but correct, while Redis is unreachable. `trustyard.wiring` picks one;
import the port from base.py.
"""
