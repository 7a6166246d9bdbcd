-- Indexes of the arm report's queries (server/nudge_server/report_store.py).

-- The data's end: the app's latest decision before the end of the range.
CREATE INDEX decisions_app_time ON decisions (app_id, decided_at);

-- The campaign's users: who triggered one of its events, and when first.
CREATE INDEX decisions_app_event_time ON decisions (app_id, event_name, decided_at);

-- Per user: their outcomes of the reward metric's type in the range.
CREATE INDEX outcomes_app_user_type_time ON outcomes (app_id, user_id, type, occurred_at);
