"""The framework ceiling: Falcon reading the body and answering a constant.

Run: gunicorn benchmarks.baselines.hello_world:app
"""

import falcon

_ANSWER = b'{"code":200,"message":"OK","description":"Success","result":null}'


class Constant:
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.bounded_stream.read()
        resp.data = _ANSWER
        resp.content_type = falcon.MEDIA_JSON

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.data = _ANSWER


app = falcon.App()
app.add_route("/serve", Constant())
app.add_route("/healthcheck", Constant())
