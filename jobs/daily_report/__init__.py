"""The ``daily_report`` task: what happened yesterday, mailed once a day.

``task`` claims the day and sends the mail, ``data`` gathers the day's runs,
``render`` turns them into the text and HTML parts (``templates/``), and
``store`` holds the queries and the once-a-day delivery claim.
"""
