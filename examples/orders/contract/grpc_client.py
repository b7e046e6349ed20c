"""A stock gRPC client, from the proto file alone: Python's grpcio with stubs that
grpc_tools.protoc generates from proto/orders/v1/orders.proto, calling every method of a
running orders service (`grpc-client.sh` starts it) and checking codes and details.

    python grpc_client.py STUBS_DIR HOST:PORT API_KEY
"""

import sys
import uuid

import grpc
from google.rpc import error_details_pb2, status_pb2

sys.path.insert(0, sys.argv[1])
from orders.v1 import orders_pb2, orders_pb2_grpc  # noqa: E402

target, api_key = sys.argv[2], sys.argv[3]
auth = [("authorization", f"Bearer {api_key}")]


def details(error):
    """The ErrorInfo reason of a failed call's google.rpc.Status details."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            assert status.code == error.code().value[0], status
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    return info.reason
    raise AssertionError(f"no ErrorInfo in {error}")


def refused(call, code, reason):
    try:
        call()
    except grpc.RpcError as error:
        assert error.code() == code, (error.code(), error.details())
        assert details(error) == reason, details(error)
        return
    raise AssertionError(f"expected {code}")


def order(sku, quantity):
    price = orders_pb2.Money(amount=1250, currency="usd")
    item = orders_pb2.LineItem(sku=sku, quantity=quantity, unit_price=price)
    return orders_pb2.Order(customer_id="cus_py", items=[item])


with grpc.insecure_channel(target) as channel:
    stub = orders_pb2_grpc.OrderServiceStub(channel)
    request_id = str(uuid.uuid4())
    create = orders_pb2.CreateOrderRequest(order=order("tea", 2), request_id=request_id)
    first = stub.CreateOrder(create, metadata=auth, timeout=5)
    assert first.name.startswith("orders/ord_"), first
    assert first.state == orders_pb2.Order.State.PENDING
    assert first.total.amount == 2500
    again = stub.CreateOrder(create, metadata=auth, timeout=5)
    assert again.name == first.name, "a retried request_id places one order"
    second = stub.CreateOrder(
        orders_pb2.CreateOrderRequest(order=order("coffee", 1)),
        metadata=auth + [("idempotency-key", str(uuid.uuid4()))],
        timeout=5,
    )

    got = stub.GetOrder(orders_pb2.GetOrderRequest(name=first.name), metadata=auth, timeout=5)
    assert got == first, got
    batch = stub.BatchGetOrders(
        orders_pb2.BatchGetOrdersRequest(names=[second.name, first.name]), metadata=auth, timeout=5
    )
    assert [o.name for o in batch.orders] == [second.name, first.name], batch

    names, token = [], ""
    while True:
        page = stub.ListOrders(
            orders_pb2.ListOrdersRequest(page_size=1, page_token=token), metadata=auth, timeout=5
        )
        names += [o.name for o in page.orders]
        token = page.next_page_token
        if not token:
            break
    assert names[:2] == [second.name, first.name], names

    refused(
        lambda: stub.ListOrders(orders_pb2.ListOrdersRequest(), timeout=5),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHORIZED",
    )
    refused(
        lambda: stub.ListOrders(
            orders_pb2.ListOrdersRequest(page_token="forged"), metadata=auth, timeout=5
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_CURSOR",
    )
    missing = "orders/ord_" + "0" * 32
    refused(
        lambda: stub.GetOrder(orders_pb2.GetOrderRequest(name=missing), metadata=auth, timeout=5),
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
    )
    refused(
        lambda: stub.CreateOrder(
            orders_pb2.CreateOrderRequest(order=order("", 0), request_id=str(uuid.uuid4())),
            metadata=auth,
            timeout=5,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "VALIDATION_FAILED",
    )
    refused(
        lambda: stub.CreateOrder(
            orders_pb2.CreateOrderRequest(order=order("tea", 9), request_id=request_id),
            metadata=auth,
            timeout=5,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "IDEMPOTENCY_KEY_REUSED",
    )
print("grpc client: every method answered as the proto says")
