"""The real CRM's `borrowers` app, reduced to the fields the reminders use (tests only)."""
