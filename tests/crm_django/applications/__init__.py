"""The real CRM's `applications` app, reduced to the fields the reminders use (tests only)."""
