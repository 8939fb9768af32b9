"""Old home of the listener and trackers, kept until the clients import them from their new modules."""

from rqueue._async.listener import AsyncListener, AsyncTracker
from rqueue._sync.listener import Listener, Tracker
from rqueue._sync.listener import Listener as SyncListener

__all__ = ["AsyncListener", "AsyncTracker", "Listener", "SyncListener", "Tracker"]
