from locust import HttpUser, constant_throughput, task


class Visitor(HttpUser):
    wait_time = constant_throughput(2)

    @task
    def locust_page(self):
        self.client.get("/locust")
