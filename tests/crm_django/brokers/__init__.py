"""The real CRM's `brokers` app, reduced to the fields the reminders use (tests only)."""
