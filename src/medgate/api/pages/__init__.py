"""The reviewer's web pages (``/review``): server-rendered Jinja2 templates, no build step."""
