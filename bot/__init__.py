"""Telegram adapter for Anime Studio Bot (python-telegram-bot). Calls only `core`'s public API."""
