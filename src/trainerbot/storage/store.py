"""The repositories, one per area, over one database connection.

Each is small enough to read whole: ``knowledge`` (examples, datasets, embeddings, model versions
and each base's settings), ``jobs`` (training jobs), ``evaluations`` (test runs),
``conversations`` (turns, replies, personas), ``feedback`` (notes, ratings, corrections),
``inbox`` (which Discord messages were handled), ``review`` (each base's review inbox: what it could not
answer, grouped into topics), ``audit`` (who changed what in each base), ``web_sessions`` (the
dashboard's sign-ins) and ``people`` (one person's rows everywhere).
"""

from __future__ import annotations

from trainerbot.storage.audit import Audit
from trainerbot.storage.conversations import Conversations
from trainerbot.storage.database import Database
from trainerbot.storage.evaluations import Evaluations
from trainerbot.storage.feedback import Feedback
from trainerbot.storage.inbox import HandledMessages
from trainerbot.storage.jobs import Jobs
from trainerbot.storage.knowledge import Knowledge
from trainerbot.storage.people import People
from trainerbot.storage.review import ReviewInbox
from trainerbot.storage.sessions import WebSessions


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.knowledge = Knowledge(db)
        self.jobs = Jobs(db)
        self.evaluations = Evaluations(db)
        self.conversations = Conversations(db)
        self.feedback = Feedback(db)
        self.inbox = HandledMessages(db)
        self.review = ReviewInbox(db)
        self.people = People(db)
        self.audit = Audit(db)
        self.web_sessions = WebSessions(db)
