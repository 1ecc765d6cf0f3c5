//! Events to SenML packs and back (docs/federation.md, "SenML mapping").
//!
//! Outgoing, an event's JSON object becomes one pack: the base name is the
//! object's remote id and a slash (`bn: "remote-1/"`), the base time the
//! moment it entered the outbox, and each chosen scalar field one record
//! (`n` the field, `v` a number, `vs` a string, `vb` a boolean). Incoming,
//! a pack is resolved (RFC 8428 section 4.6, the MQTT source's rules), each
//! record's name split at its first slash into object and field, the
//! object mapped back to the local id, and the whole published as one
//! event: `{"from": jid, "object": id, "records": [...]}`.

use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::config::{ConsumerSettings, IncomingSettings};
use crate::source::mqtt::{SenmlError, resolve_senml};
use chouquette_core::publication::NewEvent;

/// Why an incoming message cannot become an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("malformed SenML: {0}")]
    Senml(#[from] SenmlError),
    #[error("records name more than one object")]
    ManyObjects,
}

/// The pack for an event's `data`, or `None` when it has nothing to send
/// (not an object, or none of the chosen fields is a scalar).
pub fn outgoing(
    consumer: &ConsumerSettings,
    data: &str,
    key: Option<&str>,
    now: f64,
) -> Option<String> {
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(data) else {
        return None;
    };
    let local = match &consumer.object_field {
        Some(field) => fields.get(field).and_then(scalar_text),
        None => key.map(str::to_string),
    };
    let object = local.map(|id| consumer.id_map.get(&id).cloned().unwrap_or(id));
    let chosen: Vec<(&String, &Value)> = if consumer.fields.is_empty() {
        fields
            .iter()
            .filter(|(name, _)| Some(name.as_str()) != consumer.object_field.as_deref())
            .collect()
    } else {
        consumer
            .fields
            .iter()
            .filter_map(|name| fields.get_key_value(name))
            .collect()
    };
    let mut records: Vec<Value> = chosen
        .into_iter()
        .filter_map(|(name, value)| record(name, value))
        .collect();
    let first = records.first_mut()?.as_object_mut()?;
    if let Some(object) = object {
        first.insert("bn".into(), Value::String(format!("{object}/")));
    }
    first.insert("bt".into(), json!(now));
    serde_json::to_string(&records).ok()
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn record(name: &str, value: &Value) -> Option<Value> {
    let (field, value) = match value {
        Value::Number(_) => ("v", value.clone()),
        Value::String(_) => ("vs", value.clone()),
        Value::Bool(_) => ("vb", value.clone()),
        _ => return None,
    };
    let mut record = Map::new();
    record.insert("n".into(), Value::String(name.to_string()));
    record.insert(field.into(), value);
    Some(Value::Object(record))
}

/// The event an incoming pack becomes, or why it cannot.
pub fn incoming(
    rule: &IncomingSettings,
    from: &str,
    message_id: &str,
    body: &str,
    now: f64,
) -> Result<NewEvent, Malformed> {
    let resolved = resolve_senml(body.as_bytes(), now)?;
    let mut object: Option<String> = None;
    let mut records = Vec::with_capacity(resolved.records.len());
    for mut record in resolved.records {
        if let Some(Value::String(name)) = record.get("n").cloned()
            && let Some((remote, field)) = name.split_once('/')
        {
            let local = rule
                .id_map
                .get(remote)
                .cloned()
                .unwrap_or_else(|| remote.to_string());
            if object.as_ref().is_some_and(|o| *o != local) {
                return Err(Malformed::ManyObjects);
            }
            if let Some(fields) = record.as_object_mut() {
                fields.insert("n".into(), Value::String(format!("{local}/{field}")));
            }
            object = Some(local);
        }
        records.push(record);
    }
    let data = json!({ "from": from, "object": object, "records": records });
    let data = RawValue::from_string(data.to_string()).map_err(|_| SenmlError::NotJson)?;
    Ok(NewEvent {
        app_id: rule.app.clone(),
        channel: rule.channel.clone(),
        event_kind: rule.event_kind.clone(),
        keywords: object.iter().map(|o| format!("object:{o}")).collect(),
        key: object.clone(),
        data,
        // The broker drops a repeat of this id too: a message published
        // whose inbox entry could not be marked is not published twice.
        id: Some(format!("xmpp/{from}/{message_id}")),
        time: None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn consumer() -> ConsumerSettings {
        ConsumerSettings {
            name: "c".into(),
            app: "a".into(),
            channel: "ch".into(),
            filter: None,
            to: "b.example".into(),
            object_field: Some("device".into()),
            fields: vec!["temp".into(), "on".into()],
            id_map: HashMap::from([("d1".to_string(), "r1".to_string())]),
        }
    }

    fn rule() -> IncomingSettings {
        IncomingSettings {
            from: "b.example".into(),
            app: "a".into(),
            channel: "in".into(),
            event_kind: "senml".into(),
            id_map: HashMap::from([("r1".to_string(), "d1".to_string())]),
        }
    }

    #[test]
    fn chosen_fields_become_records_with_the_mapped_object() {
        let body = outgoing(
            &consumer(),
            r#"{"device":"d1","temp":21.5,"on":true,"note":"x"}"#,
            None,
            1.7e9,
        )
        .unwrap();
        let pack: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            pack,
            json!([{"bn":"r1/","bt":1.7e9,"n":"temp","v":21.5},{"n":"on","vb":true}])
        );
    }

    #[test]
    fn nothing_to_send_is_none() {
        assert_eq!(outgoing(&consumer(), "[1]", None, 0.0), None);
        assert_eq!(outgoing(&consumer(), r#"{"device":"d1"}"#, None, 0.0), None);
    }

    #[test]
    fn a_pack_sent_comes_back_with_local_ids() {
        let body = outgoing(&consumer(), r#"{"device":"d1","temp":20}"#, None, 1.7e9).unwrap();
        let event = incoming(&rule(), "b.example", "m1", &body, 1.8e9).unwrap();
        assert_eq!(event.key.as_deref(), Some("d1"));
        assert_eq!(event.keywords, vec!["object:d1".to_string()]);
        let data: Value = serde_json::from_str(event.data.get()).unwrap();
        assert_eq!(data["records"][0]["n"], "d1/temp");
        assert_eq!(data["records"][0]["v"], 20.0);
        assert_eq!(event.id.as_deref(), Some("xmpp/b.example/m1"));
    }

    #[test]
    fn malformed_and_mixed_packs_are_refused() {
        assert!(matches!(
            incoming(&rule(), "b", "m", "not json", 0.0),
            Err(Malformed::Senml(SenmlError::NotJson))
        ));
        let mixed = r#"[{"n":"x/a","v":1},{"n":"y/a","v":2}]"#;
        assert!(matches!(
            incoming(&rule(), "b", "m", mixed, 0.0),
            Err(Malformed::ManyObjects)
        ));
    }
}
