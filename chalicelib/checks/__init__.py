"""The three reminder checks, each ``collect(run) -> notices`` plus its own follow-up."""
