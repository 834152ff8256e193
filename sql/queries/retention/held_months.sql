-- Months a restore holds back from archiving until a later time.
SELECT month FROM retention_holds WHERE until > now()
