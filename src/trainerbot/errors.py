"""User-facing errors: their text is safe and useful to show to whoever sent the command."""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; the message says what and how."""


class PermissionDenied(UserError):
    """The caller may not use this command."""


class UnsafePath(UserError):
    """A path argument points outside the data directory or is not allowed."""


class TooLarge(UserError):
    """A file is over the upload limit."""


class InvalidInput(UserError):
    """A file or text could not be read; the message names the file, the line and the problem."""


class NotReady(UserError):
    """The command needs something that does not exist yet (a trained model, a job, a reply)."""


class ChatUnavailable(UserError):
    """The chat engine is down, too slow or failed; the text is safe to show, the cause is in the log."""


class SpeechUnavailable(UserError):
    """A speech engine cannot work (not loaded, offline, refused); the text is safe to show."""


class QuotaReached(UserError):
    """A server has used what it may keep or start; the message says which limit and how far it is."""
