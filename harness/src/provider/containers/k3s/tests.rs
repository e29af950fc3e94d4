//! Tests of `k3s`.

use super::*;

/// What k3s v1.35 writes to /etc/rancher/k3s/k3s.yaml (certificates shortened).
const K3S_YAML: &str = "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0E=
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
users:
- name: default
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
";

#[test]
fn the_merged_kubeconfig_names_each_cluster_and_its_loopback_port() {
    let merged = merged_kubeconfig(&[
        ("infra", K3S_YAML.to_string(), 31001),
        ("apps", K3S_YAML.replace("Q0E=", "QVBQUw=="), 31002),
    ])
    .unwrap();
    let config = Kubeconfig::from_yaml(&merged).unwrap();
    assert_eq!(config.current_context, None);
    for (name, port, ca) in [("infra", 31001, "Q0E="), ("apps", 31002, "QVBQUw==")] {
        let context = config.contexts.iter().find(|c| c.name == name).unwrap();
        let inner = context.context.as_ref().unwrap();
        assert_eq!(
            (inner.cluster.as_str(), inner.user.as_deref()),
            (name, Some(name))
        );
        let cluster = config.clusters.iter().find(|c| c.name == name).unwrap();
        let cluster = cluster.cluster.as_ref().unwrap();
        assert_eq!(
            cluster.server.as_deref(),
            Some(format!("https://127.0.0.1:{port}").as_str())
        );
        assert_eq!(cluster.certificate_authority_data.as_deref(), Some(ca));
        let user = config.auth_infos.iter().find(|u| u.name == name).unwrap();
        assert!(user.auth_info.as_ref().unwrap().client_key_data.is_some());
    }
    assert!(!merged.contains("default"), "{merged}");
    // The key material survives serialisation (kube's secret fields are written out).
    assert!(merged.contains("client-key-data: S0VZ"), "{merged}");
}

#[test]
fn a_k3s_yaml_with_more_than_one_context_is_refused() {
    let two = K3S_YAML.replace(
            "current-context: default",
            "- context:\n    cluster: default\n    user: default\n  name: other\ncurrent-context: default",
        );
    let e = cluster_kubeconfig("infra", &two, 1)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "k3s.yaml of infra has 1 clusters, 2 contexts and 1 users; expected one of each"
    );
}

#[test]
fn only_the_api_server_port_is_published_and_only_on_loopback() {
    let mut host = HostConfig {
        publish_all_ports: Some(true),
        ..Default::default()
    };
    publish_api_on_loopback(&mut host);
    assert_eq!(host.publish_all_ports, Some(false));
    let bindings = host.port_bindings.unwrap();
    assert_eq!(bindings.keys().collect::<Vec<_>>(), ["6443/tcp"]);
    let binding = &bindings["6443/tcp"].as_ref().unwrap()[0];
    assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(binding.host_port.as_deref(), Some(""));
}

#[test]
fn the_image_is_the_pinned_k3s_release_of_the_pinned_kubernetes() {
    let toolchain = Toolchain::from_env().unwrap();
    let kubernetes = toolchain.versions().get(Tool::Kubernetes);
    assert_eq!(image_tag(&toolchain).unwrap(), format!("{kubernetes}-k3s1"));
}
