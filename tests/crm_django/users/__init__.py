"""The real CRM's `users` app, reduced to the fields the reminders use (tests only)."""
