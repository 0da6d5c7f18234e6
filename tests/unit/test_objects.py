"""kdns.k8s.objects parsers: the fields DNS needs from valid objects, ObjectError from bad ones."""

from __future__ import annotations

from typing import Any

import pytest

from kdns.k8s.objects import (
    PARSERS,
    Endpoint,
    ObjectError,
    Port,
    meta_of,
    parse_endpoint_slice,
    parse_namespace,
    parse_pod,
    parse_service,
)


def svc(spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "default", "name": "kubia", **meta}, "spec": spec}


def eps(body: dict[str, Any], labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": "default", "name": "kubia-abc",
                            "labels": {"kubernetes.io/service-name": "kubia"}}
    if labels is not None:
        meta["labels"] = labels
    if annotations is not None:
        meta["annotations"] = annotations
    return {"metadata": meta, "addressType": "IPv4", **body}


# ---- Service -------------------------------------------------------------------------------


def test_service_cluster_ip() -> None:
    s = parse_service(svc({"clusterIP": "10.98.237.175", "clusterIPs": ["10.98.237.175"],
                           "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                                     {"port": 53, "protocol": "udp"}]}))
    assert s.key == ("default", "kubia")
    assert s.type == "ClusterIP"
    assert s.cluster_ips == ("10.98.237.175",)
    assert not s.headless
    assert s.external_name == ""
    assert s.ports == (Port("http", "TCP", 80), Port("", "UDP", 53))
    assert s.publish_not_ready is False


def test_service_dual_stack_ips_are_canonical() -> None:
    s = parse_service(svc({"clusterIPs": ["10.0.0.1", "fd00:0:0:0::0001"]}))
    assert s.cluster_ips == ("10.0.0.1", "fd00::1")


def test_service_cluster_ip_only_and_unallocated() -> None:
    assert parse_service(svc({"clusterIP": "10.0.0.2"})).cluster_ips == ("10.0.0.2",)
    unallocated = parse_service(svc({"clusterIP": ""}))
    assert unallocated.cluster_ips == () and not unallocated.headless


def test_service_headless() -> None:
    s = parse_service(svc({"clusterIP": "None", "clusterIPs": ["None"],
                           "publishNotReadyAddresses": True}))
    assert s.headless and s.cluster_ips == () and s.publish_not_ready


def test_service_external_name() -> None:
    s = parse_service(svc({"type": "ExternalName", "externalName": "My.Example.COM."}))
    assert s.type == "ExternalName"
    assert s.external_name == "my.example.com"
    assert s.cluster_ips == ()


def test_service_defaults_when_spec_missing() -> None:
    s = parse_service({"metadata": {"namespace": "a", "name": "b"}})
    assert (s.type, s.cluster_ips, s.ports) == ("ClusterIP", (), ())
    assert (s.external_ips, s.lb_hostnames) == ((), ())


def test_service_external_ips_and_load_balancer_ingress() -> None:
    obj = svc({"type": "LoadBalancer", "clusterIPs": ["10.0.0.9"],
               "externalIPs": ["192.0.2.10", "2001:DB8::0:10"]})
    obj["status"] = {"loadBalancer": {"ingress": [
        {"ip": "198.51.100.7"}, {"hostname": "LB-1.Elb.Example.COM."}, {"ip": "192.0.2.10"},
        {"ipMode": "VIP"}]}}
    s = parse_service(obj)
    assert s.external_ips == ("192.0.2.10", "2001:db8::10", "198.51.100.7")
    assert s.lb_hostnames == ("lb-1.elb.example.com",)


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ("not an object", "must be a JSON object"),
        ({"metadata": {"namespace": "default"}}, "metadata.name is missing"),
        ({"metadata": {"name": "x"}}, "metadata.namespace is missing"),
        ({"metadata": {"namespace": "default", "name": ""}}, "metadata.name is empty"),
        ({"metadata": {"namespace": "default", "name": 5}}, "metadata.name must be a string"),
        ({"metadata": "x"}, "metadata must be an object"),
        (svc("spec"), "spec must be an object"),
        (svc({"type": "Weird"}), "not a known Service type"),
        (svc({"clusterIP": "10.0.0.300"}), "not an IP address"),
        (svc({"clusterIPs": "10.0.0.1"}), "must be a list"),
        (svc({"clusterIPs": [7]}), "must be a string"),
        (svc({"ports": [{"name": "http"}]}), "port is missing"),
        (svc({"ports": [{"port": 0}]}), "1..65535"),
        (svc({"ports": [{"port": 70000}]}), "1..65535"),
        (svc({"ports": [{"port": True}]}), "1..65535"),
        (svc({"ports": [{"port": "80"}]}), "1..65535"),
        (svc({"ports": ["80"]}), "must be an object"),
        (svc({"ports": [{"port": 80, "protocol": 6}]}), "protocol must be a string"),
        (svc({"publishNotReadyAddresses": "yes"}), "must be a boolean"),
        (svc({"type": "ExternalName", "externalName": 3}), "externalName must be a string"),
        (svc({"type": "ExternalName"}), "externalName is missing"),
        (svc({"type": "ExternalName", "externalName": "."}), "externalName is empty"),
        (svc({"externalIPs": ["192.0.2.300"]}), r"spec.externalIPs\[\] is not an IP address"),
        (svc({"externalIPs": "192.0.2.1"}), "spec.externalIPs must be a list"),
        ({**svc({}), "status": {"loadBalancer": {"ingress": [{"ip": "x"}]}}},
         r"ingress\[0\].ip is not an IP address"),
        ({**svc({}), "status": {"loadBalancer": {"ingress": {"ip": "192.0.2.1"}}}},
         "ingress must be a list"),
        ({**svc({}), "status": {"loadBalancer": {"ingress": [{"hostname": 7}]}}},
         r"ingress\[0\].hostname must be a string"),
    ],
)
def test_service_malformed(obj: Any, reason: str) -> None:
    with pytest.raises(ObjectError, match=reason):
        parse_service(obj)


# ---- EndpointSlice -------------------------------------------------------------------------


def test_endpoint_slice_full() -> None:
    e = parse_endpoint_slice(eps(
        {
            "endpoints": [
                {"addresses": ["10.1.0.5"], "conditions": {"ready": True}, "hostname": "Web-0",
                 "targetRef": {"kind": "Pod", "name": "web-0"}},
                {"addresses": ["10.1.0.6"], "conditions": {"ready": False}},
                {"addresses": ["10.1.0.7"], "targetRef": {"kind": "Node", "name": "n1"}},
            ],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                      {"name": "all"}],  # a port without a number is skipped, not an error
        },
        annotations={"endpoints.kubernetes.io/last-change-trigger-time": "2021-03-04T05:06:07Z"},
    ))
    assert e.key == ("default", "kubia-abc")
    assert e.service == "kubia"
    assert e.address_type == "IPv4"
    assert e.endpoints == (
        Endpoint(("10.1.0.5",), "web-0", True, "web-0"),
        Endpoint(("10.1.0.6",), "", False, ""),
        Endpoint(("10.1.0.7",), "", True, ""),  # absent ready condition means ready
    )
    assert e.ports == (Port("http", "TCP", 8080),)
    assert e.trigger_time == 1614834367.0


def test_endpoint_slice_ipv6_and_fqdn() -> None:
    v6 = parse_endpoint_slice(eps({"addressType": "IPv6",
                                   "endpoints": [{"addresses": ["FD00::0:5"]}]}))
    assert v6.endpoints[0].addresses == ("fd00::5",)
    fqdn = parse_endpoint_slice(eps({"addressType": "FQDN",
                                     "endpoints": [{"addresses": ["db.example.com"]}]}))
    assert fqdn.endpoints == ()


def test_endpoint_slice_without_service_label_or_trigger_time() -> None:
    e = parse_endpoint_slice(eps({}, labels={}, annotations={
        "endpoints.kubernetes.io/last-change-trigger-time": "not a time"}))
    assert e.service == "" and e.trigger_time is None and e.endpoints == ()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"addressType": None}, "addressType is missing"),
        ({"addressType": "IPv5"}, "not IPv4, IPv6 or FQDN"),
        ({"endpoints": {"a": 1}}, "endpoints must be a list"),
        ({"endpoints": ["10.0.0.1"]}, r"endpoints\[0\] must be an object"),
        ({"endpoints": [{"addresses": ["fd00::1"]}]}, "does not match addressType"),
        ({"endpoints": [{"addresses": ["nope"]}]}, "not an IP address"),
        ({"endpoints": [{"addresses": "10.0.0.1"}]}, "addresses must be a list"),
        ({"endpoints": [{"addresses": [], "conditions": {"ready": "true"}}]}, "must be a boolean"),
        ({"endpoints": [{"addresses": [], "hostname": 1}]}, "hostname must be a string"),
        ({"endpoints": [{"addresses": [], "targetRef": {"kind": "Pod", "name": 2}}]},
         "targetRef.name must be a string"),
        ({"ports": [{"port": -1}]}, "1..65535"),
        ({"ports": [7]}, "must be an object"),
    ],
)
def test_endpoint_slice_malformed(body: dict[str, Any], reason: str) -> None:
    with pytest.raises(ObjectError, match=reason):
        parse_endpoint_slice(eps(body))


def test_endpoint_slice_bad_labels() -> None:
    obj = eps({})
    obj["metadata"]["labels"] = ["x"]
    with pytest.raises(ObjectError, match=r"metadata\.labels must be an object"):
        parse_endpoint_slice(obj)


# ---- Namespace -----------------------------------------------------------------------------


def test_namespace() -> None:
    ns = parse_namespace({"metadata": {"name": "kube-system", "labels": {"a": "b"}}})
    assert ns.name == "kube-system" and ns.key == ("", "kube-system")


@pytest.mark.parametrize("obj", [{}, {"metadata": {}}, {"metadata": {"name": ""}}, [], None])
def test_namespace_malformed(obj: Any) -> None:
    with pytest.raises(ObjectError):
        parse_namespace(obj)


# ---- Pod -----------------------------------------------------------------------------------


def pod(status: Any = None, spec: Any = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"namespace": "default", "name": "web-0"}}
    if status is not None:
        obj["status"] = status
    if spec is not None:
        obj["spec"] = spec
    return obj


def test_pod_running_dual_stack() -> None:
    p = parse_pod(pod({"phase": "Running", "podIP": "10.1.0.5",
                       "podIPs": [{"ip": "10.1.0.5"}, {"ip": "fd00::5"}, {"ip": "10.1.0.5"}]}))
    assert p.key == ("default", "web-0")
    assert p.ips == ("10.1.0.5", "fd00::5")  # duplicates removed, order kept
    assert p.running and not p.host_network


def test_pod_pod_ip_fallback_pending_and_host_network() -> None:
    p = parse_pod(pod({"phase": "Pending", "podIP": "10.1.0.9"}, {"hostNetwork": True}))
    assert p.ips == ("10.1.0.9",) and not p.running and p.host_network
    assert parse_pod(pod()).ips == ()


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        (pod({"podIPs": [{"ip": "x"}]}), "not an IP address"),
        (pod({"podIPs": [{}]}), "ip is missing"),
        (pod({"podIPs": "10.0.0.1"}), "must be a list"),
        (pod({"podIP": "10.0.0.999"}), "not an IP address"),
        (pod({"phase": 3}), "phase must be a string"),
        (pod({}, {"hostNetwork": "true"}), "hostNetwork must be a boolean"),
        (pod("Running"), "status must be an object"),
    ],
)
def test_pod_malformed(obj: Any, reason: str) -> None:
    with pytest.raises(ObjectError, match=reason):
        parse_pod(obj)


# ---- helpers -------------------------------------------------------------------------------


def test_meta_of_never_raises() -> None:
    assert meta_of({"metadata": {"namespace": "a", "name": "b"}}) == ("a", "b")
    assert meta_of({"metadata": {"name": "n"}}) == ("", "n")
    assert meta_of({"metadata": {"namespace": 1, "name": 2}}) == ("", "?")
    assert meta_of({"metadata": "x"}) == ("", "?")
    assert meta_of("garbage") == ("", "?")  # type: ignore[arg-type]


def test_parsers_table() -> None:
    assert set(PARSERS) == {"services", "endpointslices", "namespaces", "pods",
                            "serviceimports", "importedslices"}


@pytest.mark.parametrize("kind", sorted(PARSERS))
@pytest.mark.parametrize("garbage", [None, 1, "x", [], {"metadata": None}, {"metadata": []}])
def test_every_parser_rejects_garbage_with_object_error(kind: str, garbage: Any) -> None:
    with pytest.raises(ObjectError):
        PARSERS[kind](garbage)
