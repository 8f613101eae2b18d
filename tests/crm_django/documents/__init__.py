"""The real CRM's `documents` app, reduced to the fields the reminders use (tests only)."""
