//! KDL v2 parser (placeholder with the agreed API until the parser lands).
pub struct Document { pub nodes: Vec<Node> }
pub struct Node { pub ty: Option<String>, pub name: String, pub entries: Vec<Entry>, pub children: Vec<Node>, pub line: usize, pub col: usize }
pub struct Entry { pub key: Option<String>, pub ty: Option<String>, pub value: Value, pub line: usize, pub col: usize }
pub enum Value { String(String), Number(Number), Bool(bool), Null }
pub struct Number(pub String);
impl Number { pub fn as_i64(&self) -> Option<i64> { self.0.parse().ok() } }
impl Value { pub fn type_name(&self) -> &'static str { match self { Value::String(_) => "string", Value::Number(_) => "number", Value::Bool(_) => "boolean", Value::Null => "null" } } }
pub fn parse(path: &str, _src: &str) -> crate::error::Result<Document> { Err(crate::error::Error::at(path, 1, 1, "KDL parser not built yet")) }
