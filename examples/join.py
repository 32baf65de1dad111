"""Reduce-side join of two inputs: users and their orders.

Inputs: ``users.csv`` (user_id, name, country) and ``orders.csv`` (order_id,
user_id, amount). The mapper keys every row by user_id and tags it with the
table it came from (told apart by its columns); the reducer for one user_id
sees the user and all of their orders and emits one record per order.

    mrk8s run examples/join.py examples/data/users.csv examples/data/orders.csv
"""

from mrk8s import MapReduce


class JoinOrdersWithUsers(MapReduce):
    def mapper(self, _, row):
        if "order_id" in row:
            yield row["user_id"], ("order", row["order_id"], row["amount"])
        else:
            yield row["user_id"], ("user", row["name"], row["country"])

    def reducer(self, user_id, tagged):
        user = None
        orders = []
        for tag, *fields in tagged:
            if tag == "user":
                user = fields
            else:
                orders.append(fields)
        if user is None:  # orders of an unknown user: an inner join drops them
            self.increment_counter("join", "orders_without_user", len(orders))
            return
        name, country = user
        for order_id, amount in sorted(orders):
            yield order_id, {"user_id": user_id, "name": name, "country": country, "amount": amount}


if __name__ == "__main__":
    JoinOrdersWithUsers.run()
