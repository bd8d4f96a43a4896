"""A connection borrowed from a redis-py pool for raw commands, given back fit for the pool's next user.

Both materializers write their own RESP on one pooled connection and read the replies later.
A connection given back with replies unread would hand them to whoever takes it next, so it
is closed first unless every reply was read.
"""

from __future__ import annotations

import redis
from redis.connection import AbstractConnection


class PooledConnection:
    def __init__(self, client: redis.Redis) -> None:
        self.pool = client.connection_pool
        self.connection: AbstractConnection = self.pool.get_connection()

    def give_back(self, in_step: bool) -> None:
        """Return it to the pool; closed first unless every reply asked for was read (`in_step`)."""
        if not in_step:
            self.connection.disconnect()
        self.pool.release(self.connection)
