//! Network types (`/networks/*`, and the `NetworkSettings.Networks` of containers).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::de::null_default;

/// A network (`GET /networks/{id}`, one element of `GET /networks`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkResource {
    /// Name.
    pub name: String,
    /// ID (64 hex).
    pub id: String,
    /// RFC3339Nano creation time.
    #[serde(default)]
    pub created: String,
    /// `local`.
    #[serde(default)]
    pub scope: String,
    /// `bridge`, `host`, `null`.
    #[serde(default)]
    pub driver: String,
    /// IPv6 enabled.
    #[serde(rename = "EnableIPv6", default)]
    pub enable_ipv6: bool,
    /// Address management.
    #[serde(rename = "IPAM", default)]
    pub ipam: Ipam,
    /// No route to the outside.
    #[serde(default)]
    pub internal: bool,
    /// Manually attachable (swarm; always false or as requested).
    #[serde(default)]
    pub attachable: bool,
    /// Swarm routing mesh (always false).
    #[serde(default)]
    pub ingress: bool,
    /// `{"Network": ""}`.
    #[serde(default)]
    pub config_from: ConfigReference,
    /// Config-only network.
    #[serde(default)]
    pub config_only: bool,
    /// Attached containers by container ID (only in inspect; `{}` in lists).
    #[serde(default, deserialize_with = "null_default")]
    pub containers: BTreeMap<String, NetworkContainer>,
    /// Driver options (e.g. `com.docker.network.bridge.name`).
    #[serde(default, deserialize_with = "null_default")]
    pub options: BTreeMap<String, String>,
    /// Labels.
    #[serde(default, deserialize_with = "null_default")]
    pub labels: BTreeMap<String, String>,
}

/// `IPAM` of a network.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Ipam {
    /// `default`.
    #[serde(default)]
    pub driver: String,
    /// IPAM driver options (`null` when none, like dockerd).
    #[serde(default)]
    pub options: Option<BTreeMap<String, String>>,
    /// Address pools.
    #[serde(default, deserialize_with = "null_default")]
    pub config: Vec<IpamConfig>,
}

/// One address pool of a network.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct IpamConfig {
    /// CIDR, `172.29.0.0/16`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subnet: String,
    /// Gateway address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    /// Sub-range that dynamic addresses come from.
    #[serde(rename = "IPRange", default, skip_serializing_if = "String::is_empty")]
    pub ip_range: String,
    /// Reserved addresses by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub auxiliary_addresses: BTreeMap<String, String>,
}

/// `ConfigFrom` of a network.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigReference {
    /// Name of the config-only network.
    #[serde(default)]
    pub network: String,
}

/// One container attached to a network (`Containers` of a network inspect).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkContainer {
    /// Container name (no leading slash).
    pub name: String,
    /// Endpoint ID (64 hex).
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// `02:42:..`.
    pub mac_address: String,
    /// CIDR, `172.29.0.2/16`.
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    /// CIDR or empty.
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: String,
}

/// A container's endpoint on one network (`NetworkSettings.Networks.<name>`, and the
/// `EndpointConfig` of create/connect requests).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointSettings {
    /// Static addresses asked for (`--ip`, `--ip6`).
    #[serde(rename = "IPAMConfig", default)]
    pub ipam_config: Option<EndpointIpamConfig>,
    /// Legacy links, `container:alias`.
    #[serde(default)]
    pub links: Option<Vec<String>>,
    /// DNS aliases on this network.
    #[serde(default)]
    pub aliases: Option<Vec<String>>,
    /// `--mac-address` on requests; the assigned MAC in inspect.
    #[serde(default)]
    pub mac_address: String,
    /// Driver options.
    #[serde(default)]
    pub driver_opts: Option<BTreeMap<String, String>>,
    /// Network ID.
    #[serde(rename = "NetworkID", default)]
    pub network_id: String,
    /// Endpoint ID.
    #[serde(rename = "EndpointID", default)]
    pub endpoint_id: String,
    /// IPv4 gateway.
    #[serde(default)]
    pub gateway: String,
    /// IPv4 address.
    #[serde(rename = "IPAddress", default)]
    pub ip_address: String,
    /// IPv4 prefix length.
    #[serde(rename = "IPPrefixLen", default)]
    pub ip_prefix_len: u8,
    /// IPv6 gateway.
    #[serde(rename = "IPv6Gateway", default)]
    pub ipv6_gateway: String,
    /// IPv6 address.
    #[serde(rename = "GlobalIPv6Address", default)]
    pub global_ipv6_address: String,
    /// IPv6 prefix length.
    #[serde(rename = "GlobalIPv6PrefixLen", default)]
    pub global_ipv6_prefix_len: u8,
    /// Names this endpoint resolves as on the network (name, aliases, short ID).
    #[serde(rename = "DNSNames", default)]
    pub dns_names: Option<Vec<String>>,
    /// Fields berth does not interpret, kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `IPAMConfig` of an endpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointIpamConfig {
    /// `--ip`.
    #[serde(
        rename = "IPv4Address",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv4_address: String,
    /// `--ip6`.
    #[serde(
        rename = "IPv6Address",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv6_address: String,
    /// Link-local addresses.
    #[serde(
        rename = "LinkLocalIPs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub link_local_ips: Vec<String>,
}

/// `POST /networks/create` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkCreateRequest {
    /// Name.
    pub name: String,
    /// Obsolete: dockerd always checks for duplicates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_duplicate: Option<bool>,
    /// Driver, `bridge` when empty.
    #[serde(default)]
    pub driver: String,
    /// `local` or empty.
    #[serde(default)]
    pub scope: String,
    /// `--internal`.
    #[serde(default)]
    pub internal: bool,
    /// `--attachable`.
    #[serde(default)]
    pub attachable: bool,
    /// `--ingress`.
    #[serde(default)]
    pub ingress: bool,
    /// `--config-only`.
    #[serde(default)]
    pub config_only: bool,
    /// `--config-from`.
    #[serde(default)]
    pub config_from: Option<ConfigReference>,
    /// `--subnet`, `--gateway`, `--ip-range`, `--ipam-driver`, `--ipam-opt`.
    #[serde(rename = "IPAM", default)]
    pub ipam: Option<Ipam>,
    /// `--ipv6`.
    #[serde(rename = "EnableIPv6", default)]
    pub enable_ipv6: Option<bool>,
    /// `--opt` driver options.
    #[serde(default, deserialize_with = "null_default")]
    pub options: BTreeMap<String, String>,
    /// `--label`.
    #[serde(default, deserialize_with = "null_default")]
    pub labels: BTreeMap<String, String>,
    /// Fields berth does not interpret, kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `POST /networks/create` answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkCreateResponse {
    /// ID of the new network.
    pub id: String,
    /// Warning text, empty when none.
    #[serde(default)]
    pub warning: String,
}

/// `POST /networks/{id}/connect` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkConnectRequest {
    /// Container ID or name.
    pub container: String,
    /// Endpoint settings (aliases, static IPs).
    #[serde(default)]
    pub endpoint_config: Option<EndpointSettings>,
}

/// `POST /networks/{id}/disconnect` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkDisconnectRequest {
    /// Container ID or name.
    pub container: String,
    /// Disconnect even when the container is not running.
    #[serde(default)]
    pub force: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_request_from_docker_cli() {
        let body = r#"{"Name":"n1","CheckDuplicate":true,"Driver":"bridge","Scope":"","EnableIPv6":false,
            "IPAM":{"Driver":"default","Options":null,"Config":[{"Subnet":"10.1.0.0/24","Gateway":"10.1.0.1","IPRange":"10.1.0.128/25"}]},
            "Internal":true,"Attachable":false,"Ingress":false,"ConfigOnly":false,"ConfigFrom":null,"Options":null,"Labels":{"a":"b"}}"#;
        let r: NetworkCreateRequest = serde_json::from_str(body).unwrap();
        assert_eq!(r.name, "n1");
        assert!(r.internal);
        let cfg = &r.ipam.unwrap().config[0];
        assert_eq!(cfg.ip_range, "10.1.0.128/25");
        assert_eq!(r.labels["a"], "b");
    }

    #[test]
    fn resource_field_names() {
        let v = serde_json::to_value(NetworkResource::default()).unwrap();
        for k in [
            "Name",
            "Id",
            "Created",
            "Scope",
            "Driver",
            "EnableIPv6",
            "IPAM",
            "Internal",
            "Attachable",
            "Ingress",
            "ConfigFrom",
            "ConfigOnly",
            "Containers",
            "Options",
            "Labels",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        let e = serde_json::to_value(EndpointSettings::default()).unwrap();
        for k in [
            "IPAMConfig",
            "Links",
            "Aliases",
            "NetworkID",
            "EndpointID",
            "Gateway",
            "IPAddress",
            "IPPrefixLen",
            "IPv6Gateway",
            "GlobalIPv6Address",
            "GlobalIPv6PrefixLen",
            "MacAddress",
            "DriverOpts",
            "DNSNames",
        ] {
            assert!(e.get(k).is_some(), "{k}");
        }
    }
}
