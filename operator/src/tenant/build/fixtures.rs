//! A small Tenant the builder tests share.

use ember_crds::tenant::{Member, MemberRole, Subject, SubjectKind, Tenant, TenantSpec};

use super::Egress;

pub(super) const NO_EGRESS: Egress<'static> = Egress { database: None, model_stores: &[] };

pub(super) fn tenant() -> Tenant {
    let mut t = Tenant::new(
        "acme",
        TenantSpec {
            owners: vec![Subject { kind: SubjectKind::User, name: "alice".into() }],
            members: vec![
                Member { kind: SubjectKind::Group, name: "ds".into(), role: MemberRole::Edit },
                Member { kind: SubjectKind::User, name: "bob".into(), role: MemberRole::View },
            ],
            ..Default::default()
        },
    );
    t.metadata.uid = Some("uid-1".into());
    t
}
