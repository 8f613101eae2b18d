"""Loan CRM reminder checks: deployed with the Chalice app in ``app.py``."""
