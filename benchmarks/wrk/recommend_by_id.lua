-- recommend by user id: the server fills features and history from its feature store
wrk.method = "POST"
wrk.body = '{"user_id": "196", "k": 10}'
wrk.headers["Content-Type"] = "application/json"
