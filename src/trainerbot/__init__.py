"""trainerbot: a Discord bot that people chat with and teach."""
