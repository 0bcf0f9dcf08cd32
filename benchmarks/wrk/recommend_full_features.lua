-- recommend with every feature in the body (user 196-like profile, 20 past ratings); compare with recommend_by_id.lua
wrk.method = "POST"
wrk.body = '{"user_age": 49, "user_gender": "M", "user_occupation": "writer", "history_movie_ids": ["242", "302", "377", "51", "346", "474", "265", "465", "451", "86", "257", "1014", "222", "40", "29", "785", "387", "274", "1042", "1184"], "history_ratings": [3.0, 4, 2, 5, 4, 3, 4, 5, 3, 4, 2, 3, 4, 5, 3, 4, 2, 3, 4, 5], "k": 10}'
wrk.headers["Content-Type"] = "application/json"
