"""Keep the reminder service's DynamoDB tables in step with a running CRM.

Install it into the CRM (``INSTALLED_APPS += ["crm_mirror"]``): every save and
delete of a user, BDM, borrower, application (and its borrowers), note or
repayment is written to DynamoDB after its transaction commits, through the same
mapping as ``cli import`` (:mod:`ops.crm_import`). See :mod:`crm_mirror.sync`.
"""
